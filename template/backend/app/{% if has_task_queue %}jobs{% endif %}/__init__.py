"""Background jobs: the task queue, its tasks and the worker that runs them."""
