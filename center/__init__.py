"""zonechat center role."""
