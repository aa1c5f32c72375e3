"""Pure inventory domain: state + event → state (and what changed). No I/O here."""
