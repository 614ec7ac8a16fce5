"""Reorganize generation folders into a versioned layout and keep database and disk in agreement."""
