"""Where device frames come from: the local MQTT broker (mqtt.py); serial and BLE come later."""
