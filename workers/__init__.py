"""kcap's GPU side (caption, score) and the route task that files results into storage."""
