"""The emulated kernel. It knows nothing of FUSE: the file system only renders it."""
