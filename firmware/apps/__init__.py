# device apps, one package per device kind; main.py starts the one config.json names
