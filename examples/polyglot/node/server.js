// The Node service: one page saying whether the request's path is a number (is-number).
const http = require("http");
const isNumber = require("is-number");

const port = Number(process.env.PORT || 8001);
http.createServer((req, res) => {
  const text = decodeURIComponent(req.url.slice(1));
  const body = JSON.stringify({ service: "node", number: isNumber(text) }) + "\n";
  res.writeHead(200, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(body) });
  res.end(body);
}).listen(port, "0.0.0.0");
