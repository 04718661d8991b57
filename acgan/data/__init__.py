"""Data sources, the split plan and preparation of per-split shards in the store."""
