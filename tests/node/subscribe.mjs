// Node's eventsource package as a client: node subscribe.mjs URL COUNT
// Prints {"open": true} once connected, then {"id", "data"} per event, and exits
// 0 after COUNT events; any error exits 1 (no reconnecting: the test wants to see it).
import { EventSource } from "eventsource";

const [url, wanted] = process.argv.slice(2);
const source = new EventSource(url);
let seen = 0;
const timer = setTimeout(() => {
  console.error("timed out");
  process.exit(2);
}, 15000);
source.onopen = () => console.log(JSON.stringify({ open: true }));
source.onmessage = (e) => {
  console.log(JSON.stringify({ id: e.lastEventId, data: e.data }));
  if (++seen >= Number(wanted)) {
    source.close();
    clearTimeout(timer);
  }
};
source.onerror = (e) => {
  console.error("error:", e.message ?? String(e));
  process.exit(1);
};
