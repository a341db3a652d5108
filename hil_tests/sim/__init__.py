"""Simulation at the hardware boundary: virtual boards, brokers, and the tools they need."""
