"""Getting frames onto the screen cheaply: scaled once off the GUI thread, overlay drawn as vectors."""
