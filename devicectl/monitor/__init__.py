"""Live views of a session: they read status snapshots, never the inner loop."""
