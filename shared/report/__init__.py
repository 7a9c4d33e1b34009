"""A finished run read back from disk: rows and statistics, the CSV/JSONL export, the HTML
report. It reads what the route task wrote and needs no broker."""
