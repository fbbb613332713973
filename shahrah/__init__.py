"""Shahrah's composition root: the ``shahrah`` command and the embedded federation."""
