"""Step 3, delivery: packages and letters built, queued durably, sent, bounced, held for a key or kept for a digest."""
