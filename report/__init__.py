"""What operators read: the rejects report of a night, `status`, and the metrics file."""
