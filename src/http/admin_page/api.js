// Talking to /admin/api: the admin token lives in this tab's sessionStorage only (gone when the
// tab closes, never in a cookie, a URL or localStorage) and goes out as a Bearer header.

import { readEventStream } from "./event_stream.js";

const TOKEN_KEY = "boxoffice.adminToken";

/** An answer other than 2xx from the admin API. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.name = "ApiError";
    this.status = status;
  }

  get isUnauthorized() {
    return this.status === 401;
  }

  get isNotFound() {
    return this.status === 404;
  }
}

/** The token of this tab, or null. */
export function storedToken() {
  return sessionStorage.getItem(TOKEN_KEY);
}

/** Keeps the token for this tab. */
export function storeToken(token) {
  sessionStorage.setItem(TOKEN_KEY, token);
}

/** Forgets the token. */
export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

function authorization(token) {
  return { Authorization: `Bearer ${token}`, Accept: "application/json" };
}

/** The first error message of the contract's error body, or the status text. */
async function errorOf(response) {
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    if (body && Array.isArray(body.errors) && body.errors.length > 0 && body.errors[0].message) {
      message = body.errors[0].message;
    }
  } catch {
    // Not JSON: keep the status line.
  }
  return new ApiError(response.status, message);
}

/**
 * GETs an admin API path (e.g. "/admin/api/cluster") with the given token, or the stored one.
 * @returns {Promise<any>} the parsed JSON body
 * @throws {ApiError} on any status other than 2xx
 */
export async function getJson(path, token = storedToken()) {
  const response = await fetch(path, { headers: authorization(token || ""), cache: "no-store" });
  if (!response.ok) throw await errorOf(response);
  return response.json();
}

/**
 * Reads the live tail until `signal` aborts or the server ends the stream. EventSource cannot
 * send an Authorization header, so this uses fetch() and parses the event stream itself.
 * @param {(frame: {event: string, data: string, id: string}) => void} onFrame
 * @param {() => void} onOpen called once the server has accepted the request
 * @param {AbortSignal} signal
 */
export async function readTail(onFrame, onOpen, signal) {
  const response = await fetch("/admin/api/tail", {
    headers: { ...authorization(storedToken() || ""), Accept: "text/event-stream" },
    cache: "no-store",
    signal,
  });
  if (!response.ok) throw await errorOf(response);
  if (!response.body) throw new ApiError(0, "this browser cannot read a response as a stream");
  onOpen();
  await readEventStream(response.body, onFrame);
}
