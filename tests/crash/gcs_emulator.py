#!/usr/bin/env python3
"""gcp-storage-emulator on loopback, with two parts of the real GCS API that object_store's GCS
client uses and the emulator lacks: the `Last-Modified` and `ETag` headers on object GETs and PUTs, the
XML API's bucket listing (`GET /bucket?list-type=2&prefix=&delimiter=`) and object DELETE.

    tests/crash/gcs_emulator.py PORT
"""
import email.utils, sys, time

import gcp_storage_emulator.handlers.objects as objects

_download, _xml_upload = objects.download, objects.xml_upload


def _object_headers(request, response, storage):
    try:
        obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
        response["Last-Modified"] = email.utils.formatdate(time.time(), usegmt=True)
        response["ETag"] = '"{}"'.format(obj.get("etag") or obj.get("md5Hash") or obj.get("generation"))
    except Exception:
        pass  # not found: the original handler answers 404


def download(request, response, storage, *args, **kwargs):
    _object_headers(request, response, storage)
    return _download(request, response, storage, *args, **kwargs)


def xml_upload(request, response, storage, *args, **kwargs):
    result = _xml_upload(request, response, storage, *args, **kwargs)
    _object_headers(request, response, storage)
    return result


def xml_list(request, response, storage, *args, **kwargs):
    from xml.sax.saxutils import escape
    q = lambda k: request.query.get(k)[0] if request.query.get(k) else None
    bucket, prefix, delimiter = request.params["bucket_name"], q("prefix"), q("delimiter")
    files, prefixes = storage.get_file_list(bucket, prefix, delimiter, None)
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    parts = [f"<ListBucketResult><Name>{escape(bucket)}</Name><Prefix>{escape(prefix or '')}</Prefix>"
             f"<KeyCount>{len(files) + len(prefixes)}</KeyCount><IsTruncated>false</IsTruncated>"]
    for f in files:
        parts.append(f"<Contents><Key>{escape(f['name'])}</Key><LastModified>{now}</LastModified>"
                     f"<ETag>\"{escape(str(f.get('etag', '')))}\"</ETag><Size>{f.get('size', 0)}</Size></Contents>")
    for p in prefixes:
        parts.append(f"<CommonPrefixes><Prefix>{escape(p)}</Prefix></CommonPrefixes>")
    parts.append("</ListBucketResult>")
    response.write_file("".join(parts).encode(), content_type="application/xml")


objects.download, objects.xml_upload = download, xml_upload
import gcp_storage_emulator.server as server  # noqa: E402  (its routes read objects.download)

# Object routes last, as in the emulator, so its JSON API paths keep their own handlers.
server.HANDLERS = tuple(
    (regex, dict(methods, **{server.DELETE: objects.delete}) if server.PUT in methods and regex.startswith(r"^/(?P<bucket_name>") else methods)
    for regex, methods in server.HANDLERS
) + ((r"^/(?P<bucket_name>[-.\w]+)$", {server.GET: xml_list}),)
create_server = server.create_server

create_server("127.0.0.1", int(sys.argv[1]), in_memory=True).run()
