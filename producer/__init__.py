"""kcap's watcher: finds stable new images and enqueues them with back-pressure."""
