"""zonechat login role."""
