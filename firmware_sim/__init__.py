"""A simulated pen: firmware, physics, the technician's hand and fault injection."""
