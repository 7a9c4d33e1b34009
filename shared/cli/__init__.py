"""The `kcap` console script: a thin module per subcommand."""
