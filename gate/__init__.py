"""zonechat gate role."""
