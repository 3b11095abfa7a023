"""Experiments of the dual-form paper, each runnable on CPU through ``qimia dual <name>``."""
