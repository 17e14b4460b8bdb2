FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY sms_gateway ./sms_gateway
RUN pip install --no-cache-dir . && useradd --create-home gateway
USER gateway
WORKDIR /home/gateway
ENV HTTP_HOST=0.0.0.0 HTTP_PORT=9080 STORE_URL=sqlite:////home/gateway/sms-gateway.db
EXPOSE 9080
HEALTHCHECK CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:9080/health'); sys.exit(0)"
CMD ["sms-gateway", "serve"]
