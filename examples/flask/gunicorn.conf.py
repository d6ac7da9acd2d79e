# Read by gunicorn from its working directory (dir = "examples/flask").
# moongate runs several gunicorn masters side by side: without this, each
# would take over the same control socket in ~/.gunicorn (gunicorn >= 24;
# older versions ignore the name).
control_socket_disable = True
