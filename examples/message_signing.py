"""The original README's "Message Signing for Security": sign a threat-intelligence
alert with an Ed25519 key and verify it; a changed copy no longer verifies.

    python examples/message_signing.py
"""

from __future__ import annotations

import dataclasses

import nacl.signing

from somasync import Message, MessageType, SignatureError, priority


def check(message: Message) -> None:
    # Recipients can verify message authenticity
    try:
        if message.verify_signature():
            print("Message verified - authentic threat intel")
        else:
            print("Message is not signed")
    except SignatureError as exc:
        print(f"Message signature invalid: {exc}")


def main() -> None:
    # Generate a signing key for message authenticity
    signing_key = nacl.signing.SigningKey.generate()

    # Create and sign a threat intelligence message
    threat_details = {"ioc": "198.51.100.7", "technique": "T1071"}
    threat_message = (Message(MessageType.Alert(level="critical",
                                                message="APT detected in network",
                                                details=threat_details),
                              "threat-intel-node")
                      .with_priority(priority.CRITICAL)   # High priority
                      .sign_with_ed25519(signing_key))    # Cryptographic signature
    check(threat_message)
    check(Message(MessageType.Data("unsigned"), "threat-intel-node"))
    # A copy changed after signing keeps the signature, which no longer matches.
    check(dataclasses.replace(threat_message, source="impostor"))


if __name__ == "__main__":
    main()
