"""The ground floor every part of kcap stands on: settings, messages and their queues, naming
rules, the error tree, logging, metrics, Redis keys. It imports nothing above it."""
