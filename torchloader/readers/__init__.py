"""How one file becomes an array: images, ``.npy``/``.npz``/``.pt``, a reader per suffix,
and the resize applied while decoding.

Nothing runs untrusted bytes as code: ``.npy``/``.npz`` load with
``allow_pickle=False``, ``.pt`` with ``weights_only=True``, and Pillow's
decompression-bomb guard applies to every image (a JPEG larger than
``PIL.Image.MAX_IMAGE_PIXELS`` is handed to Pillow so its guard decides). Nothing
but a regular file is opened for reading: a FIFO, a device (a symlink to
``/dev/zero``) or a directory raises :class:`~torchloader.NotRegularFileError` at once.
"""
