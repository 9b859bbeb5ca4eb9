"""The sockets under the ASGI app, bounded where uvicorn leaves them open.

uvicorn's protocol classes are pluggable (`http=`, `ws=` in its Config): `http.py` and `websocket.py` are
its h11 and websockets-sansio protocols with the limits a hostile or broken client needs (a request head
that must arrive in time and in size, pongs that cannot pile up, connections that cannot outlive their
app), and an abort the app can reach, which ASGI itself has no word for. `server.py` selects them.
"""
