"""guardian-provision: flash, key, self-test, register and label devices; audit and revoke them."""
