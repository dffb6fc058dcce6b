// The chat example's JSON protocol on uWebSockets.js (npm `uwebsockets` 3.0.6), for
// benches/compare_uws.sh. Usage: node benches/uws_chat.js PORT (run with NODE_PATH set to
// the directory holding node_modules). Slow consumers: 1 MiB of backpressure, then closed,
// as the nucleus chat example's default 1 MiB queue.
const uWS = require('uwebsockets');
const port = parseInt(process.argv[2] || '9001', 10);
let next = 1;
const app = uWS.App();
const publish = (room, event) => app.publish(room, JSON.stringify(event));
app.ws('/*', {
  maxPayloadLength: 64 * 1024, idleTimeout: 120,
  maxBackpressure: 1024 * 1024, closeOnBackpressureLimit: 1,
  open: (ws) => { ws.id = 'c' + (next++).toString(16); ws.rooms = new Set(); },
  message: (ws, data) => {
    let a;
    try { a = JSON.parse(Buffer.from(data).toString()); } catch (e) { a = {}; }
    const error = (error) => ws.send(JSON.stringify({ type: 'error', error }));
    if (typeof a.room !== 'string') return error('invalid request');
    if (a.action === 'join') {
      if (!ws.rooms.has(a.room)) { ws.rooms.add(a.room); ws.subscribe(a.room); publish(a.room, { type: 'joined', room: a.room, socket: ws.id }); }
    } else if (!ws.rooms.has(a.room)) {
      error('not in room ' + JSON.stringify(a.room));
    } else if (a.action === 'leave') {
      publish(a.room, { type: 'left', room: a.room, socket: ws.id }); ws.unsubscribe(a.room); ws.rooms.delete(a.room);
    } else if (a.action === 'message' && typeof a.text === 'string') {
      publish(a.room, { type: 'message', room: a.room, from: ws.id, text: a.text });
    } else error('invalid request');
  },
  close: (ws) => { for (const room of ws.rooms) publish(room, { type: 'left', room, socket: ws.id }); },
}).listen('127.0.0.1', port, (token) => {
  if (!token) { console.error('uws: cannot listen on ' + port); process.exit(1); }
  console.log('uws chat listening on ws://127.0.0.1:' + uWS.us_socket_local_port(token));
});
