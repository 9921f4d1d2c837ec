"""Edge boards over SSH: inventory, OpenSSH transport, setup, deploy by content hash, fleet
profiling and on-device verification. See `pipeline.cli.devices` for the commands."""

from pipeline.devices.inventory import Device, Inventory, default_path, load_inventory

__all__ = ["Device", "Inventory", "default_path", "load_inventory"]
