"""Sessions that outlive their socket: resume tokens, parked sessions, finals to deliver again, shared state."""
