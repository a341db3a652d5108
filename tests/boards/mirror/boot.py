# Test app for the virtual board (tests/test_virtual_board.py): proves boot.py runs first.
print("boot.py: ran")
