"""Long work: the task runner (progress, cancel, recovery) and the event hub."""
