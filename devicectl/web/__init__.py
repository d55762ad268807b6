"""The live web monitor: a local page fed by Server-Sent Events (see docs/web.md)."""
