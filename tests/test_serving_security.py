"""Security and configuration errors: TLS with client certificates, bearer tokens
(UNAUTHENTICATED without a valid one), plaintext refused when TLS is on, loopback by default, and
a service that refuses to start with one clear line when its repository or Triton is wrong."""
import json
import shutil
import subprocess
import sys

import grpc
import pytest

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent / "helpers"))

TOKEN = "s3cret-token-for-tests"


@pytest.fixture(scope="module")
def repo(tiny_repo, tmp_path_factory):
    from conftest import repo_copy

    return repo_copy(tiny_repo, tmp_path_factory, "secure")


@pytest.fixture(scope="module")
def secure(repo, tmp_path_factory):
    from certs import make_certs

    from tworec.serving.config import SecurityConfig
    from tworec.serving.server import ServeConfig, Service

    folder = tmp_path_factory.mktemp("certs")
    certs = make_certs(folder)
    (folder / "tokens.txt").write_text(f"other-token\n{TOKEN}\n")
    security = SecurityConfig(tls_cert=str(certs["server_cert"]), tls_key=str(certs["server_key"]),
                              tls_client_ca=str(certs["ca"]), tokens_file=str(folder / "tokens.txt"))
    with Service(ServeConfig(repo=str(repo), security=security)) as service:
        yield service, certs


def _client(service, certs, token=TOKEN, client_cert=True):
    from tworec.serving.client import RecommenderClient

    return RecommenderClient(service.address, timeout_s=10.0, token=token, root_certificates=certs["ca_bytes"],
                             private_key=certs["client_key_bytes"] if client_cert else None,
                             certificate_chain=certs["client_cert_bytes"] if client_cert else None)


def test_binds_to_loopback_by_default(secure):
    service, _ = secure
    assert service.address.startswith("127.0.0.1:")
    assert service.triton_server.grpc_address.startswith("127.0.0.1:")


def test_mutual_tls_with_a_valid_token_is_served(secure):
    service, certs = secure
    with _client(service, certs) as client:
        response = client.recommend("someone", [], k=5)
        assert len(response.items) == 5
        assert client.health() == "SERVING"


@pytest.mark.parametrize("token", [None, "", "wrong", TOKEN + "x", TOKEN[:-1]])
def test_a_call_without_a_valid_token_is_unauthenticated(secure, token):
    service, certs = secure
    with _client(service, certs, token=token) as client:
        with pytest.raises(grpc.RpcError) as err:
            client.recommend("someone", [], k=5)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as err:
            client.upsert_items([{"item_id": "x1", "title": "t", "description": "", "categories": []}])
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert client.health() == "SERVING"  # probes need no token


def test_reflection_needs_a_token_too(secure):
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    service, certs = secure
    with _client(service, certs, token=None) as client:
        stub = reflection_pb2_grpc.ServerReflectionStub(client.channel)
        with pytest.raises(grpc.RpcError) as err:
            next(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                           timeout=10))
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_plaintext_and_certificateless_clients_are_refused(secure):
    from tworec.serving.client import RecommenderClient

    service, certs = secure
    with RecommenderClient(service.address, timeout_s=3.0, token=TOKEN) as plaintext:
        with pytest.raises(grpc.RpcError) as err:
            plaintext.recommend("someone", [], k=5)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    with _client(service, certs, client_cert=False) as no_cert:
        with pytest.raises(grpc.RpcError) as err:
            no_cert.recommend("someone", [], k=5, timeout_s=3.0)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def _serve(args, timeout=120):
    return subprocess.run([sys.executable, "-m", "tworec.cli", "serve", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_a_missing_repository_refuses_to_start_with_one_clear_line(tmp_path):
    done = _serve(["--repo", str(tmp_path / "nowhere")])
    assert done.returncode == 2
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 and "does not exist" in lines[0] and "tworec export" in lines[0]


def test_a_dimension_mismatch_refuses_to_start(repo, tmp_path):
    broken = tmp_path / "repo"
    shutil.copytree(repo, broken)
    from tworec.towers.index import ItemIndex

    meta_path = broken / "gateway" / "1" / "index" / ItemIndex.DESCRIPTION
    meta = json.loads(meta_path.read_text())
    meta["dimension"] += 1
    meta_path.write_text(json.dumps(meta))
    done = _serve(["--repo", str(broken)])
    assert done.returncode == 2
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 and "dimension" in lines[0] and "re-export" in lines[0]


def test_a_version_of_another_format_refuses_to_start(repo, tmp_path):
    from tworec.export.artifact import GatewayArtifact

    old = tmp_path / "repo"
    shutil.copytree(repo, old)
    meta_path = old / "gateway" / "1" / GatewayArtifact.DESCRIPTION
    meta = json.loads(meta_path.read_text())
    meta["format"]["version"] = 0
    meta_path.write_text(json.dumps(meta))
    done = _serve(["--repo", str(old)])
    assert done.returncode == 2
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 and "format 0" in lines[0] and "re-export" in lines[0], done.stdout


def test_a_triton_that_cannot_start_refuses_to_start(repo):
    from tworec.serving.bundle import ConfigError  # noqa: F401 - the same exits as the CLI
    from tworec.serving.server import ServeConfig, Service
    from tworec.serving.triton import TritonError

    for binary, fragment in (("/nonexistent/tritonserver", "cannot run tritonserver"), ("/bin/false", "exited")):
        with pytest.raises(TritonError) as err:
            Service(ServeConfig(repo=str(repo), triton_binary=binary)).start()
        first = str(err.value).splitlines()[0]
        assert fragment in first and "make install" in first
