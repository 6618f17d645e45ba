"""A throwaway CA, a server certificate for 127.0.0.1/localhost and a client certificate (tests only)."""
import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert(subject, issuer, public_key, signing_key, ca=False, san=None):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
               .public_key(public_key).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(signing_key, hashes.SHA256())


def make_certs(folder: Path) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    ca_key = _key()
    ca = _cert("tworec test CA", "tworec test CA", ca_key.public_key(), ca_key, ca=True)
    out = {"ca": ca.public_bytes(serialization.Encoding.PEM)}
    for name, san in (("server", [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                      ("client", None)):
        key = _key()
        cert = _cert(f"tworec {name}", "tworec test CA", key.public_key(), ca_key, san=san)
        out[f"{name}_key"], out[f"{name}_cert"] = _pem_key(key), cert.public_bytes(serialization.Encoding.PEM)
    for name, data in out.items():
        (folder / f"{name}.pem").write_bytes(data)
    return {name: folder / f"{name}.pem" for name in out} | {f"{name}_bytes": data for name, data in out.items()}
