"""devicectl: host controller and simulator for a scalp microneedling pen."""
