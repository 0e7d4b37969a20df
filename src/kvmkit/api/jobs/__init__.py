"""The task bodies behind the API's long operations, their start-up recovery, and how a route starts one."""
