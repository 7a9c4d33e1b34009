"""kcap's shared package: settings, the Celery app, message schemas, naming rules, errors."""
