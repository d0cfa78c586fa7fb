"""Step 1 of the journey, intake: the mailbox, and a raw message -> its sender and decrypted attachments."""
