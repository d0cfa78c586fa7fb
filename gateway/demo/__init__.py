"""`gateway demo`: the whole journey on servers embedded in this machine, with sample returns."""
