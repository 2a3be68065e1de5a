"""Local control API: a versioned HTTP/1.1+JSON server on a Unix socket, and its client."""
