"""``kache config``: the editor generated from the schema."""
