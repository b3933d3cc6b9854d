"""zonechat zone role."""
