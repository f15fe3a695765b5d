"""Task families: each module gives a loader, chat-message prompts and its verifiable reward."""
