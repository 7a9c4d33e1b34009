"""Dataset shards in and out: WebDataset tar and Parquet, on local disk or any fsspec store.

One module per concern: `sources` lists input shards, `reading` streams their samples (the tar
and Parquet rules live in `tar_format` and `parquet_format`, the key rules in `keys`),
`writing` writes output shards under temporary names and commits them (`staging` owns the
temporary names), `rows` fixes the captions Parquet schema, and `markers` records finished
shards. Nothing here imports the model stack: a storage host or the producer can use it.
"""
