"""``kind = "s3"``: new objects under a bucket prefix, polled with ``ListObjectsV2`` (boto3).

The gateway's own AWS credentials are used (boto3's usual chain: environment, profile,
instance role); ``endpoint_url`` points at an S3-compatible service. The event is Lambda's S3
notification (``objects.s3_event``); ``endpoint_url``, when set, is also in the client context
(``context.client_context.custom["endpoint_url"]``) so that the handler can fetch the object.
With ``batch_job = true`` the source also uploads its completed jobs' results and errors
beside their input objects (``batch_jobs.ResultUploads``), with the same client.

Because those are the gateway's credentials, with auth on the bucket, the ``batch_output`` and
the endpoint must be granted by the operator (``access.check_s3_source``) before the client
exists: every request goes through ``_client()``, so a refused source sends none, and says why
in ``coldbrew source ls`` as a folder outside its roots does.
"""

from __future__ import annotations

from typing import Any

from coldbrew.jobs.sources.access import check_s3_source
from coldbrew.jobs.sources.batch_jobs import ResultUploads
from coldbrew.jobs.sources.objects import ObjectSource, StoredObject, s3_event


class S3Source(ObjectSource):
    kind = "s3"
    auth_enabled = False

    def target(self) -> str:
        where = f" at {self.config.endpoint_url}" if self.config.endpoint_url else ""
        return f"s3://{self.config.bucket}/{self.config.prefix}{where}"

    _uploads: ResultUploads | None = None

    @property
    def uploads(self) -> ResultUploads:
        if self._uploads is None:
            self._uploads = ResultUploads(self)
        return self._uploads

    async def tend(self) -> None:
        await self.uploads.run()

    async def lag(self) -> dict[str, int] | None:
        lag = await super().lag() or {}
        if self.config.batch_job:
            lag["pending_uploads"] = self.uploads.pending
        return lag

    def _client(self) -> Any:
        if getattr(self, "_s3", None) is None:
            # Checked on each try until it passes: the config of a runner never changes (a
            # redeploy starts a new one), the operator's variables only with a restart.
            check_s3_source(self.config, self.auth_enabled)
            import boto3  # the s3 extra: only gateways with an S3 source need it

            self._s3 = boto3.client(
                "s3", endpoint_url=self.config.endpoint_url, region_name=self.config.region
            )
        return self._s3

    def list_objects(self) -> list[StoredObject]:
        out: list[StoredObject] = []
        pages = self._client().get_paginator("list_objects_v2")
        for page in pages.paginate(Bucket=self.config.bucket, Prefix=self.config.prefix):
            for item in page.get("Contents", []):
                etag = str(item.get("ETag", "")).strip('"')
                modified = item["LastModified"]
                out.append(
                    StoredObject(
                        key=item["Key"],
                        size=int(item.get("Size", 0)),
                        etag=etag,
                        modified=modified,
                        version=f"{etag}:{modified.isoformat()}",
                    )
                )
        return out

    def event(self, obj: StoredObject) -> tuple[bytes, dict[str, Any] | None]:
        client = self._client()
        region = self.config.region or client.meta.region_name or "us-east-1"
        context = None
        if self.config.endpoint_url:
            context = {"custom": {"endpoint_url": self.config.endpoint_url}}
        return s3_event(self.config.bucket, obj, region), context
