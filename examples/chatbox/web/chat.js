// Chatbox's page: one turn per message (POST agent), queued messages every 2 s
// (POST listener). A turn keeps its id across retries, so a retried turn gets
// the answer of the first try, never a second answer.
"use strict";

const key = new URLSearchParams(location.hash.slice(1)).get("key");
const messages = document.getElementById("messages");
const typing = document.getElementById("typing");
const form = document.getElementById("composer");
const input = document.getElementById("input");
const send = document.getElementById("send");
let session = sessionStorage.getItem("chatbox-id") || "-1";
let inFlight = 0;

function newTurnId() {
  if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
  return Date.now().toString(36) + Math.random().toString(36).slice(2);
}

function scrollDown() { messages.scrollTop = messages.scrollHeight; }

function bubble(text, who, extra) {
  const div = document.createElement("div");
  div.className = "bubble " + who + (extra ? " " + extra : "");
  div.textContent = text;
  messages.appendChild(div);
  scrollDown();
  return div;
}

function card(film) {
  const div = document.createElement("article");
  div.className = "card";
  const title = document.createElement("h2");
  title.textContent = film.title + " (" + film.year + ")";
  const meta = document.createElement("div");
  meta.className = "meta";
  meta.textContent = "Directed by " + film.director + " · " + film.cast.slice(0, 3).join(", ") + " · Rated " + film.rating;
  const genres = document.createElement("div");
  genres.className = "genres";
  for (const g of film.genres) {
    const span = document.createElement("span");
    span.textContent = g;
    genres.appendChild(span);
  }
  const plot = document.createElement("p");
  plot.textContent = film.plot;
  div.append(title, meta, genres, plot);
  messages.appendChild(div);
  scrollDown();
}

async function post(path, body) {
  const headers = { "Content-Type": "application/json" };
  if (key) headers["Authorization"] = "Bearer " + key;
  const response = await fetch(path, { method: "POST", headers, body: JSON.stringify(body) });
  if (response.status >= 500) throw new Error("server " + response.status);
  const data = await response.json();
  if (!response.ok) throw Object.assign(new Error(data.detail || data.error), { final: true });
  return data;
}

async function turn(text) {
  const message = { text, mode: text ? "chat" : "start", id: session, turn: newTurnId() };
  inFlight += 1;
  typing.hidden = false;
  send.disabled = true;
  try {
    for (let attempt = 0; ; attempt += 1) {
      try {
        const data = await post("agent", message);
        session = data.userid;
        sessionStorage.setItem("chatbox-id", session);
        bubble(data.response.text, "bot");
        if (data.response.card) card(data.response.card);
        return data;
      } catch (error) {
        if (error.final || attempt >= 5) {
          bubble("Sorry, I could not reach the server. Please try again.", "bot");
          return null;
        }
        await new Promise((resolve) => setTimeout(resolve, 300 * 2 ** attempt));
      }
    }
  } finally {
    inFlight -= 1;
    typing.hidden = inFlight === 0;
    send.disabled = false;
    input.focus();
  }
}

async function listen() {
  if (session === "-1") return;
  try {
    const data = await post("listener", { mode: "poll", id: session });
    for (const message of data.response.messages || []) {
      bubble(message.text, "bot", "passive");
      if (message.card) card(message.card);
    }
  } catch (error) {
    // the next poll tries again
  }
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = input.value.trim();
  if (!text) return;
  input.value = "";
  bubble(text, "user");
  turn(text);
});

setInterval(listen, 2000);
turn("");
