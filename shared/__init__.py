"""kcap's shared package, in floors: shared.core (the ground floor everything stands on),
shared.report (reading a finished run back) and shared.cli (the top floor: the `kcap`
command, which composes the producer and the workers; nothing imports it)."""
