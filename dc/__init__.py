"""zonechat dc role."""
