// A parser of `text/event-stream` (the HTML standard's "server-sent events" format), fed with
// text as it arrives, so the tail can be read with fetch() and a ReadableStream.

/**
 * Turns chunks of an event stream into frames. Lines may end in CRLF, LF or CR and may be split
 * anywhere between chunks; a frame ends at a blank line; comment lines (":" first, the server's
 * keep-alives) are skipped; "data" lines are joined with newlines.
 */
export class EventStreamParser {
  constructor(onFrame) {
    this.onFrame = onFrame;
    this.buffer = "";
    this.skipLineFeed = false;
    this.reset();
  }

  reset() {
    this.eventName = "";
    this.dataLines = [];
    this.lastEventId = this.lastEventId || "";
  }

  /** Feeds the next piece of text. */
  push(text) {
    let chunk = text;
    if (this.skipLineFeed && chunk.startsWith("\n")) chunk = chunk.slice(1);
    this.skipLineFeed = false;
    this.buffer += chunk;
    for (;;) {
      const end = this.buffer.search(/\r\n|\r|\n/);
      if (end < 0) return;
      const line = this.buffer.slice(0, end);
      let length = 1;
      if (this.buffer[end] === "\r") {
        if (end + 1 < this.buffer.length) {
          if (this.buffer[end + 1] === "\n") length = 2;
        } else {
          // A CR at the very end: its LF may come with the next chunk.
          this.skipLineFeed = true;
        }
      }
      this.buffer = this.buffer.slice(end + length);
      this.line(line);
    }
  }

  line(line) {
    if (line === "") {
      if (this.dataLines.length > 0) {
        this.onFrame({
          event: this.eventName || "message",
          data: this.dataLines.join("\n"),
          id: this.lastEventId,
        });
      }
      this.reset();
      return;
    }
    if (line.startsWith(":")) return;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") this.eventName = value;
    else if (field === "data") this.dataLines.push(value);
    else if (field === "id" && !value.includes("\0")) this.lastEventId = value;
    // "retry" and unknown fields do not matter here: the page reconnects on its own schedule.
  }
}

/**
 * Reads a response body to its end, handing each complete frame to `onFrame`.
 * @param {ReadableStream<Uint8Array>} body
 */
export async function readEventStream(body, onFrame) {
  const parser = new EventStreamParser(onFrame);
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      parser.push(value);
    }
  } finally {
    reader.releaseLock();
  }
}
