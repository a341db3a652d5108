"""Where device frames come from: the local MQTT broker (mqtt.py, on mqttclient.py) and serial ports
(serial.py). Wristbands send adverts, not frames: their source is agent/gateway/wristbands/source.py."""
