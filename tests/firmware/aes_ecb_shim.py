# CPython stand-in for MicroPython's cryptolib.aes in ECB mode (mode 1), over the
# cryptography package's AES-ECB, so firmware/lib/aesccm.py runs unchanged under CPython in
# the firmware tests. Only what the firmware uses: aes(key, 1), encrypt(block[, out]).
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

_MODE_ECB = 1


class aes:  # the name cryptolib gives it
    def __init__(self, key, mode):
        if mode != _MODE_ECB:
            raise ValueError("shim: only ECB (mode 1)")
        self._enc = Cipher(algorithms.AES(bytes(key)), modes.ECB()).encryptor()

    def encrypt(self, block, out=None):
        data = self._enc.update(bytes(block))
        if out is None:
            return data
        out[: len(data)] = data
        return None
